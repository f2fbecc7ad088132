//! Kinds served from CustomResourceDefinitions: [`kinds_from_crds`] reads a file of CRDs (a
//! release's Gateway API bundle) and makes one [`ResourceKind`] per CRD, with the schema of
//! the version the CRD stores.
//!
//! Only the storage version is served. It is the version every controller this project runs
//! watches (Contour reads GatewayClass, Gateway and HTTPRoute at v1, ReferenceGrant at
//! v1beta1, TLSRoute and TCPRoute at v1alpha2, BackendTLSPolicy at v1alpha3: each the storage
//! version of its CRD), and serving one version needs no conversion.
//!
//! A CRD's `metadata` schema is only `type: object`; an API server checks metadata as
//! ObjectMeta whatever the CRD says, so the served schema says ObjectMeta instead.
//!
//! The kinds live as long as the process: they are made once per distinct file content and
//! shared by every server started with it.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

use super::kinds::ResourceKind;
use super::openapi;

/// The kinds the CRDs in `text` (YAML, several documents) define, at their storage versions.
///
/// # Errors
/// The text is not YAML, or a document is not a CustomResourceDefinition with a served
/// storage version and a schema; the message names the document.
pub fn kinds_from_crds(text: &str) -> Result<Vec<&'static ResourceKind>, String> {
    static MADE: OnceLock<Mutex<HashMap<u64, Vec<&'static ResourceKind>>>> = OnceLock::new();
    let key = fnv1a(text.as_bytes());
    let mut made = MADE.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(kinds) = made.get(&key) {
        return Ok(kinds.clone());
    }
    let documents: Vec<Value> =
        serde_saphyr::from_str_multiple(text).map_err(|e| format!("the CRD file is not YAML: {e}"))?;
    let mut kinds = Vec::new();
    for (index, crd) in documents.iter().enumerate().filter(|(_, d)| !d.is_null()) {
        let kind = kind_of(crd).map_err(|e| format!("document {} of the CRD file: {e}", index + 1))?;
        kinds.push(&*Box::leak(Box::new(kind)));
    }
    made.insert(key, kinds.clone());
    Ok(kinds)
}

/// One CRD as a served kind.
fn kind_of(crd: &Value) -> Result<ResourceKind, String> {
    if crd["kind"] != "CustomResourceDefinition" {
        return Err(format!("kind {} is not CustomResourceDefinition", crd["kind"]));
    }
    let spec = &crd["spec"];
    let text = |value: &Value, what: &str| -> Result<&'static str, String> {
        match value.as_str() {
            Some(s) if !s.is_empty() => Ok(leak(s)),
            _ => Err(format!("{} has no {what}", crd["metadata"]["name"])),
        }
    };
    let group = text(&spec["group"], "spec.group")?;
    let names = &spec["names"];
    let kind = text(&names["kind"], "spec.names.kind")?;
    let plural = text(&names["plural"], "spec.names.plural")?;
    let singular = match names["singular"].as_str() {
        Some(s) if !s.is_empty() => leak(s),
        _ => leak(&kind.to_lowercase()),
    };
    let short_names: Vec<&'static str> =
        names["shortNames"].as_array().into_iter().flatten().filter_map(Value::as_str).map(leak).collect();
    let stored = spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["storage"] == true && v["served"] == true)
        .ok_or_else(|| format!("{plural}.{group} has no served storage version"))?;
    let version = text(&stored["name"], "version name")?;
    let schema = stored["schema"]["openAPIV3Schema"].clone();
    if !schema.is_object() {
        return Err(format!("{plural}.{group} {version} has no openAPIV3Schema"));
    }
    let mut kind = ResourceKind {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced: spec["scope"] == "Namespaced",
        short_names: Box::leak(short_names.into_boxed_slice()),
        status_subresource: stored["subresources"]["status"].is_object(),
        crd_schema: None,
    };
    let served = openapi::served_crd_schema(&kind, schema);
    kind.crd_schema = Some(Box::leak(Box::new(served)));
    Ok(kind)
}

fn leak(text: &str) -> &'static str {
    Box::leak(text.to_string().into_boxed_str())
}

/// FNV-1a, 64 bits: tells file contents apart.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// A CRD for tests: `Widget` in `example.test`, served at v1 (storage) and v1beta1.
#[cfg(test)]
pub(crate) fn widget_crd() -> Value {
    use serde_json::json;
    let schema = json!({
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "required": ["size"],
                "properties": {
                    "size": {"type": "integer", "minimum": 1},
                    "colour": {"type": "string", "default": "blue", "enum": ["blue", "red"]},
                },
            },
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
        },
    });
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.test"},
        "spec": {
            "group": "example.test",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "shortNames": ["wd"]},
            "scope": "Namespaced",
            "versions": [
                {"name": "v1beta1", "served": true, "storage": false, "schema": {"openAPIV3Schema": schema.clone()}},
                {"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": schema},
                 "subresources": {"status": {}}},
            ],
        },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_crd_is_served_at_its_storage_version_with_object_meta() {
        let text = serde_saphyr::to_string(&widget_crd()).unwrap();
        let kinds = kinds_from_crds(&text).unwrap();
        let [widget] = kinds.as_slice() else { panic!("{kinds:?}") };
        assert_eq!(
            (widget.group, widget.version, widget.kind, widget.plural),
            ("example.test", "v1", "Widget", "widgets")
        );
        assert!(widget.namespaced && widget.status_subresource);
        assert_eq!(widget.short_names, ["wd"]);
        let schema = widget.crd_schema.unwrap();
        let meta = openapi::resolve(&schema["properties"]["metadata"]);
        assert!(meta["properties"]["labels"].is_object(), "metadata is ObjectMeta: {meta}");
        // Made once per content: a second server shares the kinds.
        assert!(std::ptr::eq(kinds[0], kinds_from_crds(&text).unwrap()[0]));
    }

    #[test]
    fn what_is_not_a_crd_is_named() {
        let err = kinds_from_crds("kind: ConfigMap\n").unwrap_err();
        assert_eq!(err, "document 1 of the CRD file: kind \"ConfigMap\" is not CustomResourceDefinition");
        let mut crd = widget_crd();
        crd["spec"]["versions"][1]["served"] = json!(false);
        let err = kinds_from_crds(&serde_saphyr::to_string(&crd).unwrap()).unwrap_err();
        assert_eq!(err, "document 1 of the CRD file: widgets.example.test has no served storage version");
    }
}
