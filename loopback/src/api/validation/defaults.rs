//! [`apply_defaults`]: a structural schema's `default:` values filled into an object, as an API
//! server fills a custom resource's from its CRD before it validates or stores it.
//!
//! Top down, as apiextensions' structural defaulting does: at each object, every property the
//! schema gives a default and the object lacks (or holds as `null` where the schema is not
//! `nullable`) gets a copy of the default; then each property present, each array item and
//! each `additionalProperties` value is defaulted in turn, so a defaulted object gets its own
//! nested defaults too. Gateway API's CRDs rely on this: a listener without `allowedRoutes`
//! gets `{namespaces: {from: Same}}`, a backendRef without a kind is a `Service`, an HTTPRoute
//! rule without `matches` matches the path prefix `/`; the real Contour reads those fields
//! without checking that they are set.

use serde_json::Value;

use crate::api::openapi;

/// Fills `schema`'s defaults into `object`, in place.
pub fn apply_defaults(schema: &Value, object: &mut Value) {
    let schema = openapi::resolve(schema);
    match object {
        Value::Object(fields) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    let property = openapi::resolve(property);
                    let Some(default) = property.get("default") else { continue };
                    let nullable = property.get("nullable").and_then(Value::as_bool) == Some(true);
                    match fields.get(name) {
                        None => {
                            fields.insert(name.clone(), default.clone());
                        }
                        Some(Value::Null) if !nullable => {
                            fields.insert(name.clone(), default.clone());
                        }
                        Some(_) => {}
                    }
                }
                for (name, value) in fields.iter_mut() {
                    if let Some(property) = properties.get(name) {
                        apply_defaults(property, value);
                    }
                }
            } else if let Some(values) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                for value in fields.values_mut() {
                    apply_defaults(values, value);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply_defaults(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_and_null_fields_get_defaults_top_down_and_set_ones_stay() {
        let schema = json!({
            "type": "object",
            "properties": {
                "listeners": {"type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "port": {"type": "integer"},
                        "allowedRoutes": {
                            "type": "object",
                            "default": {"namespaces": {}},
                            "properties": {"namespaces": {
                                "type": "object",
                                "properties": {"from": {"type": "string", "default": "Same"}},
                            }},
                        },
                    },
                }},
                "mode": {"type": "string", "default": "strict"},
                "note": {"type": "string", "nullable": true, "default": "kept null"},
                "labels": {"type": "object", "additionalProperties": {
                    "type": "object", "properties": {"weight": {"type": "integer", "default": 1}},
                }},
            },
        });
        let mut object = json!({
            "listeners": [
                {"port": 80},
                {"port": 443, "allowedRoutes": {"namespaces": {"from": "All"}}},
            ],
            "mode": null,
            "note": null,
            "labels": {"a": {}, "b": {"weight": 5}},
        });
        apply_defaults(&schema, &mut object);
        assert_eq!(
            object,
            json!({
                "listeners": [
                    // The default object, then its own nested default.
                    {"port": 80, "allowedRoutes": {"namespaces": {"from": "Same"}}},
                    {"port": 443, "allowedRoutes": {"namespaces": {"from": "All"}}},
                ],
                "mode": "strict",
                "note": null,
                "labels": {"a": {"weight": 1}, "b": {"weight": 5}},
            })
        );
    }
}
