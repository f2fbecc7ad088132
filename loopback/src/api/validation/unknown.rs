//! Fields a schema does not declare: [`unknown_fields`] finds them, [`prune`] drops them, and
//! [`FieldValidation`] is the `fieldValidation` query parameter that says what a write does
//! about them.
//!
//! A field is unknown when it sits in an object whose schema lists its `properties` without
//! `x-kubernetes-preserve-unknown-fields` or `additionalProperties`. Paths are printed as the
//! API server's pruning prints them: `spec.virtualhosts`, `spec.routes[0].service`.

use serde_json::Value;

use super::field::FieldError;
use super::schema::child;
use crate::api::errors::ApiError;
use crate::api::openapi;

/// What a create, update or patch does with unknown fields (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Refuse the request.
    Strict,
    /// Drop the fields and say so in `Warning` headers; the default since Kubernetes 1.27.
    Warn,
    /// Drop the fields silently.
    Ignore,
}

impl FieldValidation {
    /// Reads the query parameter; `options_kind` (`CreateOptions`, `PatchOptions`, ...) names
    /// the options object in the error, as Kubernetes does.
    ///
    /// # Errors
    /// `Invalid` (422) for a value other than `Strict`, `Warn`, `Ignore` or empty.
    pub fn from_query(value: Option<&str>, options_kind: &str) -> Result<Self, ApiError> {
        match value.unwrap_or_default() {
            "" | "Warn" => Ok(FieldValidation::Warn),
            "Strict" => Ok(FieldValidation::Strict),
            "Ignore" => Ok(FieldValidation::Ignore),
            other => {
                let supported = ["", "Ignore", "Strict", "Warn"].map(Value::from);
                let error = FieldError::not_supported("fieldValidation", &Value::from(other), &supported);
                Err(ApiError::invalid_group_kind("meta.k8s.io", options_kind, "", &[error]))
            }
        }
    }
}

/// The paths of the fields in `value` that `schema` does not declare, in document order
/// (keys sorted within each object).
pub fn unknown_fields(schema: &Value, value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    walk(schema, value, "", &mut found);
    found
}

/// Removes every field [`unknown_fields`] reports.
pub fn prune(schema: &Value, value: &mut Value) {
    let schema = openapi::resolve(schema);
    match value {
        Value::Object(map) => {
            map.retain(|key, _| declared(schema, key).is_some());
            for (key, child_value) in map.iter_mut() {
                if let Some(Some(child_schema)) = declared(schema, key) {
                    prune(child_schema, child_value);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                items.iter_mut().for_each(|item| prune(item_schema, item));
            }
        }
        _ => {}
    }
}

fn walk(schema: &Value, value: &Value, path: &str, found: &mut Vec<String>) {
    let schema = openapi::resolve(schema);
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for key in keys {
                match declared(schema, key) {
                    None => found.push(child(path, key)),
                    Some(Some(child_schema)) => walk(child_schema, &map[key], &child(path, key), found),
                    Some(None) => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), found);
                }
            }
        }
        _ => {}
    }
}

/// Whether an object with `schema` may hold `key`: `None` when it may not, otherwise the
/// schema of the value (`Some(None)` when the value is not described, so anything goes).
fn declared<'a>(schema: &'a Value, key: &str) -> Option<Option<&'a Value>> {
    if let Some(property) = schema.get("properties").and_then(|p| p.get(key)) {
        return Some(Some(property));
    }
    match schema.get("additionalProperties") {
        Some(additional @ Value::Object(_)) => return Some(Some(additional)),
        Some(Value::Bool(true)) => return Some(None),
        _ => {}
    }
    let preserves = schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true);
    // A schema that says nothing about objects (no type, no properties) constrains nothing.
    let silent = schema.get("type").is_none() && schema.get("properties").is_none();
    if preserves || silent { Some(None) } else { None }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "routes": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                        "loose": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                },
            },
        })
    }

    #[test]
    fn finds_and_prunes_undeclared_fields() {
        let mut object = json!({
            "spec": {"routes": [{"name": "a", "nmae": "b"}], "loose": {"x": 1}, "labels": {"k": "v"}, "extra": 1},
            "specs": {},
        });
        assert_eq!(unknown_fields(&schema(), &object), ["spec.extra", "spec.routes[0].nmae", "specs"]);
        prune(&schema(), &mut object);
        assert_eq!(object, json!({"spec": {"routes": [{"name": "a"}], "loose": {"x": 1}, "labels": {"k": "v"}}}));
        assert!(unknown_fields(&schema(), &object).is_empty());
    }

    #[test]
    fn directive_values() {
        assert_eq!(FieldValidation::from_query(None, "CreateOptions").unwrap(), FieldValidation::Warn);
        assert_eq!(FieldValidation::from_query(Some("Strict"), "CreateOptions").unwrap(), FieldValidation::Strict);
        assert_eq!(FieldValidation::from_query(Some("Ignore"), "CreateOptions").unwrap(), FieldValidation::Ignore);
        let err = FieldValidation::from_query(Some("strict"), "PatchOptions").unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(
            err.message,
            r#"PatchOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "strict": supported values: "", "Ignore", "Strict", "Warn""#
        );
    }
}
