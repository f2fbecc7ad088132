//! Component schemas: `ObjectMeta` and the other shared types, built-in kinds (their top-level
//! fields, contents preserved) and lists; the Contour kinds are in `contour.rs`.
//! Also the small constructors the schema tables are written with.

use serde_json::{Map, Value, json};

use super::{contour, gvk, reference, schema_name};
use crate::api::kinds::{self, ResourceKind};

pub(super) const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
pub(super) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";

/// The schemas every group version's document carries.
pub(super) fn shared() -> Map<String, Value> {
    let mut shared = Map::new();
    shared.insert(OBJECT_META.into(), object_meta());
    shared.insert(
        LIST_META.into(),
        object(&[("continue", string()), ("remainingItemCount", integer()), ("resourceVersion", string())], &[]),
    );
    shared.insert(STATUS.into(), loose_object());
    shared
}

/// `metadata`: every field of ObjectMeta, so that a misspelt one is an unknown field.
fn object_meta() -> Value {
    let string_map = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let mut meta = object(
        &[
            ("annotations", string_map.clone()),
            ("creationTimestamp", date_time()),
            ("deletionGracePeriodSeconds", integer()),
            ("deletionTimestamp", date_time()),
            ("finalizers", array(string())),
            ("generateName", string()),
            ("generation", integer()),
            ("labels", string_map),
            ("managedFields", array(loose_object())),
            ("name", string()),
            ("namespace", string()),
            ("ownerReferences", array(loose_object())),
            ("resourceVersion", string()),
            ("selfLink", string()),
            ("uid", string()),
        ],
        &[],
    );
    meta["description"] = json!("Standard object's metadata.");
    meta
}

/// The schema of one kind, with its group-version-kind.
pub(super) fn kind_schema(kind: &ResourceKind) -> Value {
    let mut schema = if kind == &kinds::HTTP_PROXY {
        contour::http_proxy()
    } else if kind == &kinds::TLS_CERTIFICATE_DELEGATION {
        contour::tls_certificate_delegation()
    } else {
        let mut fields = vec![("apiVersion", string()), ("kind", string()), ("metadata", metadata())];
        fields.extend(builtin_fields(kind));
        object(&fields, &[])
    };
    schema["x-kubernetes-group-version-kind"] = json!([gvk(kind, "")]);
    schema
}

/// `<Kind>List`.
pub(super) fn list_schema(kind: &ResourceKind) -> Value {
    let mut list = object(
        &[
            ("apiVersion", string()),
            ("items", array(reference(&schema_name(kind)))),
            ("kind", string()),
            ("metadata", json!({"allOf": [reference(LIST_META)], "default": {}})),
        ],
        &["items"],
    );
    list["x-kubernetes-group-version-kind"] = json!([gvk(kind, "List")]);
    list
}

/// `metadata` as a kind's schema holds it.
pub(super) fn metadata() -> Value {
    json!({"allOf": [reference(OBJECT_META)], "default": {}, "description": "Standard object's metadata."})
}

/// The top-level fields of a built-in kind besides apiVersion, kind and metadata; their
/// contents are not described.
fn builtin_fields(kind: &ResourceKind) -> Vec<(&'static str, Value)> {
    let string_map = || json!({"type": "object", "additionalProperties": {"type": "string"}});
    match kind.kind {
        "Secret" => {
            vec![("data", string_map()), ("immutable", boolean()), ("stringData", string_map()), ("type", string())]
        }
        "ConfigMap" => vec![("binaryData", string_map()), ("data", string_map()), ("immutable", boolean())],
        "Event" => [
            "action",
            "count",
            "eventTime",
            "firstTimestamp",
            "involvedObject",
            "lastTimestamp",
            "message",
            "reason",
            "related",
            "reportingComponent",
            "reportingInstance",
            "series",
            "source",
            "type",
        ]
        .into_iter()
        .map(|name| (name, json!({"x-kubernetes-preserve-unknown-fields": true})))
        .collect(),
        "EndpointSlice" => ["addressType", "endpoints", "ports"]
            .into_iter()
            .map(|name| (name, json!({"x-kubernetes-preserve-unknown-fields": true})))
            .collect(),
        _ => vec![("spec", loose_object()), ("status", loose_object())],
    }
}

/// An object with these properties (and no others) and these required ones.
pub(super) fn object(properties: &[(&str, Value)], required: &[&str]) -> Value {
    let properties: Map<String, Value> = properties.iter().map(|(k, v)| ((*k).to_string(), v.clone())).collect();
    let mut schema = json!({"type": "object", "properties": properties});
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    schema
}

/// An object whose contents are not described: any field is kept.
pub(super) fn loose_object() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// `schema` with a `description`, for `kubectl explain`.
pub(super) fn described(mut schema: Value, text: &str) -> Value {
    schema["description"] = json!(text);
    schema
}

pub(super) fn array(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

pub(super) fn string() -> Value {
    json!({"type": "string"})
}

pub(super) fn boolean() -> Value {
    json!({"type": "boolean"})
}

pub(super) fn integer() -> Value {
    json!({"type": "integer"})
}

fn date_time() -> Value {
    json!({"type": "string", "format": "date-time"})
}
