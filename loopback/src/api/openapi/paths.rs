//! The operations of a kind in an OpenAPI v3 document: [`for_kind`].
//!
//! Each operation carries `x-kubernetes-action` and `x-kubernetes-group-version-kind`; kubectl
//! finds the PATCH operation of a kind by the latter and checks it takes `fieldValidation`.

use serde_json::{Map, Value, json};

use super::{gvk, reference, schema_name};
use crate::api::kinds::{self, ResourceKind};

/// The path items for `kind`: its collections, the object, and the status (and log)
/// subresources.
pub(super) fn for_kind(kind: &ResourceKind) -> Map<String, Value> {
    let prefix = if kind.group.is_empty() {
        format!("/api/{}", kind.version)
    } else {
        format!("/apis/{}/{}", kind.group, kind.version)
    };
    let scoped = if kind.namespaced { format!("{prefix}/namespaces/{{namespace}}") } else { prefix.clone() };
    let object_path = format!("{scoped}/{}/{{name}}", kind.plural);
    let mut paths = Map::new();
    if kind.namespaced {
        let mut all = Map::new();
        all.insert("get".into(), operation(kind, "list", "ForAllNamespaces", &list_params(), &list_ref(kind)));
        paths.insert(format!("{prefix}/{}", kind.plural), Value::Object(all));
    }
    let mut collection = Map::new();
    collection.insert("get".into(), operation(kind, "list", "", &list_params(), &list_ref(kind)));
    collection.insert("post".into(), operation(kind, "post", "", &write_params(), &object_ref(kind)));
    collection.insert("delete".into(), operation(kind, "deletecollection", "", &list_params(), &status_ref()));
    paths.insert(format!("{scoped}/{}", kind.plural), with_path_params(collection, kind.namespaced, false));
    paths.insert(object_path.clone(), with_path_params(object_operations(kind, ""), kind.namespaced, true));
    if kind.status_subresource {
        let status = object_operations(kind, "Status");
        paths.insert(format!("{object_path}/status"), with_path_params(status, kind.namespaced, true));
    }
    if kind == &kinds::POD {
        let mut log = Map::new();
        let text = json!({"type": "string"});
        log.insert("get".into(), operation(kind, "get", "Log", &[query("container"), query("tailLines")], &text));
        paths.insert(format!("{object_path}/log"), with_path_params(log, true, true));
    }
    paths
}

/// get, put, patch (and delete for the main resource) on one object or its `suffix`
/// subresource.
fn object_operations(kind: &ResourceKind, suffix: &str) -> Map<String, Value> {
    let mut patch_params = write_params();
    patch_params.push(query("force"));
    let mut operations = Map::new();
    operations.insert("get".into(), operation(kind, "get", suffix, &[], &object_ref(kind)));
    operations.insert("put".into(), operation(kind, "put", suffix, &write_params(), &object_ref(kind)));
    operations.insert("patch".into(), operation(kind, "patch", suffix, &patch_params, &object_ref(kind)));
    if suffix.is_empty() {
        operations.insert("delete".into(), operation(kind, "delete", "", &[query("dryRun")], &status_ref()));
    }
    operations
}

fn operation(kind: &ResourceKind, action: &str, suffix: &str, parameters: &[Value], response: &Value) -> Value {
    let verb = match action {
        "get" => "read",
        "post" => "create",
        "put" => "replace",
        "deletecollection" => "deleteCollection",
        other => other,
    };
    let mut op = json!({
        "operationId": operation_id(kind, verb, suffix),
        "tags": [tag(kind)],
        "parameters": parameters,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": response}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(kind, ""),
    });
    if matches!(action, "post" | "put" | "patch") {
        let types: &[&str] = if action == "patch" {
            &[
                "application/apply-patch+yaml",
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            ]
        } else {
            &["application/json", "application/yaml"]
        };
        let body_schema = if action == "patch" { json!({"type": "object"}) } else { object_ref(kind) };
        let content: Map<String, Value> =
            types.iter().map(|t| ((*t).to_string(), json!({"schema": body_schema}))).collect();
        op["requestBody"] = json!({"content": content, "required": true});
    }
    op
}

/// `patchProjectcontourIoV1NamespacedHTTPProxyStatus`, as Kubernetes names operations.
fn operation_id(kind: &ResourceKind, verb: &str, suffix: &str) -> String {
    let scope = if kind.namespaced && suffix != "ForAllNamespaces" { "Namespaced" } else { "" };
    format!("{verb}{}{scope}{}{suffix}", tag(kind), kind.kind)
}

/// `CoreV1`, `AppsV1`, `NetworkingV1`, `ProjectcontourIoV1`.
fn tag(kind: &ResourceKind) -> String {
    let group = match kind.group {
        "" => "core",
        group => group.trim_end_matches(".k8s.io"),
    };
    let camel: String = group.split('.').map(capitalize).collect();
    format!("{camel}{}", capitalize(kind.version))
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

fn with_path_params(mut operations: Map<String, Value>, namespaced: bool, named: bool) -> Value {
    let mut params = vec![];
    if named {
        params.push(path_param("name"));
    }
    if namespaced {
        params.push(path_param("namespace"));
    }
    params.push(query("pretty"));
    operations.insert("parameters".into(), json!(params));
    Value::Object(operations)
}

fn write_params() -> Vec<Value> {
    vec![query("dryRun"), query("fieldManager"), query("fieldValidation")]
}

fn list_params() -> Vec<Value> {
    ["continue", "fieldSelector", "labelSelector", "limit", "resourceVersion", "timeoutSeconds", "watch"]
        .map(query)
        .to_vec()
}

fn query(name: &str) -> Value {
    let schema = match name {
        "force" | "watch" => json!({"type": "boolean", "uniqueItems": true}),
        "limit" | "timeoutSeconds" | "tailLines" => json!({"type": "integer", "uniqueItems": true}),
        _ => json!({"type": "string", "uniqueItems": true}),
    };
    json!({"name": name, "in": "query", "schema": schema})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

fn object_ref(kind: &ResourceKind) -> Value {
    reference(&schema_name(kind))
}

fn list_ref(kind: &ResourceKind) -> Value {
    reference(&format!("{}List", schema_name(kind)))
}

fn status_ref() -> Value {
    reference(super::components::STATUS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_named_like_kubernetes() {
        assert_eq!(
            operation_id(&kinds::HTTP_PROXY, "patch", "Status"),
            "patchProjectcontourIoV1NamespacedHTTPProxyStatus"
        );
        assert_eq!(operation_id(&kinds::SECRET, "list", "ForAllNamespaces"), "listCoreV1SecretForAllNamespaces");
        assert_eq!(operation_id(&kinds::NAMESPACE, "create", ""), "createCoreV1Namespace");
        assert_eq!(tag(&kinds::INGRESS), "NetworkingV1");
    }

    #[test]
    fn namespaced_kinds_have_object_and_status_paths() {
        let paths = for_kind(&kinds::HTTP_PROXY);
        let object = &paths["/apis/projectcontour.io/v1/namespaces/{namespace}/httpproxies/{name}"];
        assert_eq!(object["patch"]["x-kubernetes-action"], "patch");
        assert!(paths.contains_key("/apis/projectcontour.io/v1/namespaces/{namespace}/httpproxies/{name}/status"));
        assert!(paths.contains_key("/apis/projectcontour.io/v1/httpproxies"));
        let namespaces = for_kind(&kinds::NAMESPACE);
        assert!(namespaces.contains_key("/api/v1/namespaces/{name}"));
        assert!(for_kind(&kinds::POD).contains_key("/api/v1/namespaces/{namespace}/pods/{name}/log"));
    }
}
