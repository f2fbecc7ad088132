//! OpenAPI v3 documents for every served kind, and the schemas behind admission.
//!
//! kubectl's `--validate=strict` (its default) reads `/openapi/v3`, an index of one document
//! per group version, then the document of the object's group version: when that document's
//! PATCH operation for the kind takes a `fieldValidation` parameter, kubectl leaves validation
//! to the server (`?fieldValidation=Strict`). `/openapi/v2` is not served (404): kubectl
//! 1.32 does not need it once v3 answers.
//!
//! The same component schemas drive the server's own checks (`super::validation`):
//! HTTPProxy and TLSCertificateDelegation are modelled on Contour's CRDs (`contour.rs`),
//! built-in kinds declare their top-level fields and `metadata` (`components.rs`); where detail
//! is not needed a schema preserves unknown fields. Operations are in `paths.rs`.

mod components;
mod contour;
mod paths;

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use super::kinds::{KINDS, Kinds, ResourceKind};

pub use contour::{FQDN_PATTERN, SUBJECT_NAMES_RULE};

/// Where schemas refer to one another.
const REF_PREFIX: &str = "#/components/schemas/";

/// Every component schema, by name.
fn components() -> &'static Map<String, Value> {
    static COMPONENTS: OnceLock<Map<String, Value>> = OnceLock::new();
    COMPONENTS.get_or_init(|| {
        let mut all = components::shared();
        for kind in KINDS {
            all.insert(schema_name(kind), components::kind_schema(kind));
            all.insert(format!("{}List", schema_name(kind)), components::list_schema(kind));
        }
        all
    })
}

/// The schema of objects of `kind`.
pub fn schema(kind: &ResourceKind) -> &'static Value {
    // Every kind in `KINDS` has a component; `components()` is built from that table. Kinds
    // from CRDs carry their own.
    kind.crd_schema.unwrap_or_else(|| &components()[&schema_name(kind)])
}

/// A CRD's `openAPIV3Schema` as loopback serves it for `kind`: `metadata` is ObjectMeta (a
/// CRD's says only `type: object`, and the API server checks metadata itself), and the
/// group-version-kind is named as for every other kind.
pub fn served_crd_schema(kind: &ResourceKind, mut schema: Value) -> Value {
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        properties.insert("metadata".into(), components::metadata());
    }
    schema["x-kubernetes-group-version-kind"] = json!([gvk(kind, "")]);
    schema
}

/// The `default` of `status` in `kind`'s schema, if it has one.
pub fn status_default(kind: &ResourceKind) -> Option<Value> {
    resolve(&schema(kind)["properties"]["status"]).get("default").cloned()
}

/// The schema `schema` stands for: the component a `$ref` (or an `allOf` of one `$ref`)
/// names, or `schema` itself.
pub fn resolve(schema: &Value) -> &Value {
    let wrapped = || match schema.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
        Some([only]) => only.get("$ref"),
        _ => None,
    };
    schema
        .get("$ref")
        .or_else(wrapped)
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(REF_PREFIX))
        .and_then(|name| components().get(name))
        .unwrap_or(schema)
}

/// `{"$ref": ...}` to a component.
fn reference(name: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX}{name}")})
}

/// The component name Kubernetes gives a kind: `io.k8s.api.core.v1.Secret`,
/// `io.k8s.api.networking.v1.Ingress`, `io.projectcontour.v1.HTTPProxy`.
pub fn schema_name(kind: &ResourceKind) -> String {
    let package = match kind.group {
        "" => "io.k8s.api.core".to_string(),
        group if !group.contains('.') => format!("io.k8s.api.{group}"),
        group if group.ends_with(".k8s.io") => format!("io.k8s.api.{}", group.trim_end_matches(".k8s.io")),
        group => group.rsplit('.').collect::<Vec<_>>().join("."),
    };
    format!("{package}.{}.{}", kind.version, kind.kind)
}

/// The `x-kubernetes-group-version-kind` value of a kind (or of its list with `suffix`).
fn gvk(kind: &ResourceKind, suffix: &str) -> Value {
    json!({"group": kind.group, "version": kind.version, "kind": format!("{}{suffix}", kind.kind)})
}

/// `/openapi/v3`: where each group version's document is, with a hash of its content.
pub fn index(kinds: &Kinds) -> Value {
    let mut paths = Map::new();
    for (group, version) in kinds.group_versions() {
        let key = gv_key(group, version);
        let document = gv_document(kinds, group, version);
        let url = format!("/openapi/v3/{key}?hash={}", content_hash(&document));
        paths.insert(key, json!({"serverRelativeURL": url}));
    }
    json!({"paths": paths})
}

/// The document at `/openapi/v3/{key}` (`api/v1`, `apis/apps/v1`, ...), if served.
pub fn document(kinds: &Kinds, key: &str) -> Option<Value> {
    let (group, version) = match key.trim_matches('/').split('/').collect::<Vec<_>>().as_slice() {
        ["api", version] => ("", *version),
        ["apis", group, version] => (*group, *version),
        _ => return None,
    };
    let (group, version) = kinds.group_versions().into_iter().find(|gv| *gv == (group, version))?;
    Some(gv_document(kinds, group, version))
}

fn gv_key(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

fn gv_document(kinds: &Kinds, group: &str, version: &str) -> Value {
    let mut schemas = components::shared();
    let mut all_paths = Map::new();
    for kind in kinds.in_group_version(group, version) {
        let name = schema_name(kind);
        let list = format!("{name}List");
        if let Some(schema) = kind.crd_schema {
            schemas.insert(list, components::list_schema(kind));
            schemas.insert(name, schema.clone());
        } else {
            for name in [name, list] {
                schemas.insert(name.clone(), components()[&name].clone());
            }
        }
        all_paths.extend(paths::for_kind(kind));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0-loopback"},
        "paths": all_paths,
        "components": {"schemas": schemas},
    })
}

/// FNV-1a over the document's JSON, upper-case hex: stable for as long as the document is.
fn content_hash(document: &Value) -> String {
    let bytes = serde_json::to_vec(document).unwrap_or_default();
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016X}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kinds;

    #[test]
    fn index_points_at_every_group_version() {
        let kinds = Kinds::built_in();
        let index = index(&kinds);
        let paths = index["paths"].as_object().unwrap();
        assert_eq!(paths.len(), kinds.group_versions().len());
        let contour = paths["apis/projectcontour.io/v1"]["serverRelativeURL"].as_str().unwrap();
        assert!(contour.starts_with("/openapi/v3/apis/projectcontour.io/v1?hash="), "{contour}");
        assert!(document(&kinds, "apis/projectcontour.io/v1").is_some());
        assert!(document(&kinds, "api/v1").is_some());
        assert!(document(&kinds, "apis/projectcontour.io/v2").is_none());
        assert!(document(&kinds, "apis/projectcontour.io").is_none());
        assert!(document(&kinds, "apis/example.test/v1").is_none());
    }

    #[test]
    fn a_kind_from_a_crd_has_its_document() {
        let text = serde_saphyr::to_string(&crate::api::crds::widget_crd()).unwrap();
        let kinds = Kinds::with(&crate::api::crds::kinds_from_crds(&text).unwrap()).unwrap();
        let document = document(&kinds, "apis/example.test/v1").unwrap();
        let schemas = &document["components"]["schemas"];
        assert_eq!(schemas["test.example.v1.Widget"]["properties"]["spec"]["required"], json!(["size"]));
        assert_eq!(
            schemas["test.example.v1.WidgetList"]["properties"]["items"]["items"]["$ref"],
            json!("#/components/schemas/test.example.v1.Widget")
        );
        assert!(document["paths"].as_object().unwrap().keys().any(|p| p.ends_with("/widgets/{name}/status")));
        assert!(index(&kinds)["paths"]["apis/example.test/v1"].is_object());
    }

    #[test]
    fn component_names_follow_kubernetes() {
        assert_eq!(schema_name(&kinds::SECRET), "io.k8s.api.core.v1.Secret");
        assert_eq!(schema_name(&kinds::DEPLOYMENT), "io.k8s.api.apps.v1.Deployment");
        assert_eq!(schema_name(&kinds::INGRESS), "io.k8s.api.networking.v1.Ingress");
        assert_eq!(schema_name(&kinds::HTTP_PROXY), "io.projectcontour.v1.HTTPProxy");
    }

    #[test]
    fn every_kind_schema_names_its_group_version_kind() {
        for kind in KINDS {
            let schema = schema(kind);
            assert_eq!(schema["x-kubernetes-group-version-kind"][0], gvk(kind, ""), "{}", kind.kind);
            let meta = resolve(&schema["properties"]["metadata"]);
            assert!(meta["properties"].get("labels").is_some(), "{}", kind.kind);
        }
    }

    #[test]
    fn every_patch_operation_takes_field_validation() {
        let kinds = Kinds::built_in();
        for (group, version) in kinds.group_versions() {
            let document = gv_document(&kinds, group, version);
            for kind in KINDS.iter().filter(|k| k.group == group && k.version == version) {
                let patches: Vec<&Value> = document["paths"]
                    .as_object()
                    .unwrap()
                    .values()
                    .filter_map(|item| item.get("patch"))
                    .filter(|op| op["x-kubernetes-group-version-kind"] == gvk(kind, ""))
                    .collect();
                assert!(!patches.is_empty(), "{}", kind.kind);
                for op in patches {
                    let params = op["parameters"].as_array().unwrap();
                    assert!(params.iter().any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
                }
            }
        }
    }
}
